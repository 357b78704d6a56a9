"""`hallmark <command>`: the command-line face of the Python API.

Layout (no module here imports another in a circle):
  main.py       the `hallmark` click group: help settings, --version, one-line errors
  options.py    option builders shared by the commands (model, sampling, dataclass-derived flags)
  generate.py   generate, chat            models.py   models, info
  watermark.py  detect, keys new|list|show
  provenance.py verify, provenance key
  server.py     serve, ui, logs            tasks.py    translate, summarize, ask, eval
  policy.py     policy show|check     train.py    finetune, pretrain
The command modules import options.py and library modules only, never each other or main.py; this
package puts them together by registering each command on `main`, which it exports (the
`hallmark` script is `hallmark.cli:main`).

Every option can also be set with an environment variable, HALLMARK_<OPTION> (for example
HALLMARK_MODEL, HALLMARK_TEMPERATURE); a flag on the command line wins over the variable.
"""

from hallmark.cli import generate, models, policy, provenance, server, tasks, train, watermark
from hallmark.cli.main import main

for _command in (
    generate.generate,
    generate.chat,
    models.models,
    models.info,
    watermark.detect,
    watermark.keys,
    provenance.verify,
    provenance.provenance,
    server.serve,
    server.ui,
    server.logs,
    tasks.translate,
    tasks.summarize,
    tasks.ask,
    tasks.eval_task,
    policy.policy,
    train.finetune,
    train.pretrain,
):
    main.add_command(_command)

__all__ = ["main"]
