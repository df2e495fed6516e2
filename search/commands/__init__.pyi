from .cli import build_parser as build_parser
from .cli import main as main
from .drift import run_drift as run_drift
from .retrain import run_retrain as run_retrain
from .search import run_search as run_search
from .train import run_train as run_train
