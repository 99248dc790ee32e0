"""Executes canary.ipynb headlessly with nbclient (what the test suite does); exits non-zero if a
cell fails. Usage: python run.py [OUTPUT.ipynb]"""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

here = pathlib.Path(__file__).parent
nb = nbformat.read(here / "canary.ipynb", as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path("/tmp/canary.out.ipynb")
nbformat.write(nb, out)
print("executed", len(nb.cells), "cells into", out)
