"""mmengine integration: checkpoint loading and checking (torch >= 2.6), tool logic."""
from .checkpoint import (CheckpointError, check_state_dict_fits, checkpoint_kind,
                         find_resume_checkpoint, load_checkpoint_file, load_local_checkpoint,
                         register_checkpoint_loader, save_checkpoint_file)

__all__ = ['CheckpointError', 'check_state_dict_fits', 'checkpoint_kind', 'find_resume_checkpoint',
           'load_checkpoint_file', 'load_local_checkpoint', 'register_checkpoint_loader',
           'save_checkpoint_file']
