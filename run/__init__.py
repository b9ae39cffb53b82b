"""The zoo's commands (``python run/svi.py`` from a checkout, or the ``mmvae-*`` console scripts
installed with the project; see README.md)."""
