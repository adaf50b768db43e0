import sys
from pathlib import Path

# tests/helpers.py is imported as a plain module by every layer
sys.path.insert(0, str(Path(__file__).parent))
