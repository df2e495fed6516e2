from .configured_data import data_fingerprint as data_fingerprint
from .configured_data import data_params as data_params
from .configured_data import load_data as load_data
from .configured_data import print_notes as print_notes
from .recipe import baseline_spec as baseline_spec
from .recipe import fit_settings as fit_settings
from .recipe import run_metrics as run_metrics
from .recipe import set_training_threads as set_training_threads
