"""Trainers: one module per `model.kind`, each registering itself in `registry`; never found by dotted imports.

Importing the package imports every module in it, so a new kind is one new module here that
defines its settings model and calls `register_trainer` (no list to edit elsewhere). Those
modules import their estimator library inside functions: `sluice config check` builds the schema
from them without importing scikit-learn, XGBoost or torch. The modules that only hold fitted
estimator classes (what stored models unpickle to) import scikit-learn at the top and are skipped
here; trainers import them when they fit.
"""

import importlib
import pkgutil

ESTIMATOR_MODULES = {"base", "torch_mlp"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ESTIMATOR_MODULES:
        importlib.import_module(f"{__name__}.{_module.name}")
