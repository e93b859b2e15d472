"""The Replicate surface: predictions and files as Replicate's API and clients have them, over the job service."""
