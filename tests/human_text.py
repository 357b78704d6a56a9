"""Human-written English text the tests can rely on: docstrings of Python's standard library.

Written by people long before LLMs, installed everywhere Python is, and plentiful (hundreds of
passages of 60+ words), so negatives for watermark detection need no downloaded data.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from functools import lru_cache

_MODULES = [
    "argparse",
    "asyncio",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "email",
    "functools",
    "http.client",
    "json",
    "logging",
    "pathlib",
    "random",
    "re",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.request",
    "zipfile",
    "inspect",
    "pickle",
    "shutil",
    "socket",
    "ssl",
    "fractions",
    "heapq",
    "itertools",
    "os",
    "io",
    "abc",
    "enum",
    "dataclasses",
    "contextlib",
    "difflib",
    "doctest",
    "pdb",
    "pprint",
    "queue",
    "sched",
    "selectors",
    "shlex",
    "smtplib",
    "tempfile",
    "timeit",
    "trace",
    "uuid",
    "zoneinfo",
    "calendar",
    "codecs",
    "configparser",
    "copy",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "hmac",
    "imaplib",
    "ipaddress",
    "locale",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "platform",
    "poplib",
    "pydoc",
    "quopri",
    "reprlib",
    "secrets",
    "signal",
    "site",
    "socketserver",
    "struct",
    "sysconfig",
    "tokenize",
    "types",
    "warnings",
    "weakref",
    "zipapp",
]


@lru_cache(maxsize=1)
def human_passages(min_words: int = 60) -> tuple[str, ...]:
    texts: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            for _, obj in inspect.getmembers(module):
                if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                    continue
                if getattr(obj, "__module__", "") != module.__name__:
                    continue
                doc = inspect.getdoc(obj)
                if doc and len(doc.split()) >= min_words and doc not in texts:
                    texts.append(doc)
    return tuple(texts)
