"""Language codes (ISO 639-1) the task commands accept, and their English names for prompts."""

from __future__ import annotations

from hallmark.errors import HallmarkError

LANGUAGES = {
    "ar": "Arabic",
    "bg": "Bulgarian",
    "ca": "Catalan",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sr": "Serbian",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


class UnknownLanguageError(HallmarkError, ValueError):
    """A language code the task commands do not know."""


def language_code(code_or_name: str) -> str:
    """The ISO 639-1 code for a code ("fr", "FR", "fr-CA") or an English name ("French")."""
    value = code_or_name.strip()
    lowered = value.lower().replace("_", "-")
    if lowered.split("-")[0] in LANGUAGES:
        return lowered.split("-")[0]
    for code, name in LANGUAGES.items():
        if name.lower() == lowered:
            return code
    raise UnknownLanguageError(
        f"unknown language {value!r}: use an ISO 639-1 code such as fr, de or es "
        f"(known: {', '.join(LANGUAGES)})"
    )


def language_name(code: str) -> str:
    return LANGUAGES[language_code(code)]
