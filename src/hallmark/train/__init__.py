"""Training in PyTorch: LoRA fine-tuning, small pretraining, and their exports as GGUF files.

Needs torch, transformers and peft (the `train` extra); only the training commands import it, so
the rest of hallmark runs without them.
"""
