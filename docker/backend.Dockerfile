# The TakeMeter backend. torch 2.13.0 from PyPI carries CUDA on Linux x86_64, so the same
# image trains on a GPU when the container is given one (see docker-compose.gpu.yml).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt requirements-offline.txt ./
RUN pip install -r requirements.txt && pip install --no-deps -r requirements-offline.txt
COPY backend ./backend
COPY scripts ./scripts
COPY label_config.xml ./
COPY data ./data
ENV MODEL_DIR=/data PORT=9090
VOLUME ["/data"]
EXPOSE 9090
CMD ["gunicorn", "-c", "backend/gunicorn_conf.py", "backend.wsgi:app"]
