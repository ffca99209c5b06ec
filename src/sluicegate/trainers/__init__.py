"""Trainers: one module per `model.kind`, each registering itself in `registry`; never found by dotted imports.

Importing the package imports every module in it, so a new kind is one new module here that
defines its settings model and calls `register_trainer` (no list to edit elsewhere).
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
