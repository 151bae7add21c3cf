"""Entry point: `gunicorn run:app`, `flask --app run ...`, or `python run.py` (127.0.0.1:5000)."""

import argparse

from config import load_config
from jobservice import create_app

app = create_app(load_config())

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve jobservice with the development server.")
    parser.add_argument("--port", type=int, default=5000)
    app.run(host="127.0.0.1", port=parser.parse_args().port)
