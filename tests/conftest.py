import os
import sys

# The repository root (configs/, launch.py) importable from tests.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
