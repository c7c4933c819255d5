# The TakeMeter backend. torch 2.13.0 from PyPI carries CUDA on Linux x86_64, so the same
# image trains on a GPU when the container is given one (see docker-compose.gpu.yml).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt requirements-offline.txt ./
RUN pip install -r requirements.txt && pip install --no-deps -r requirements-offline.txt
# The server package only: the tools (takemeter/: evaluation, the local stack) and the
# benchmarks stay out of the image.
COPY backend ./backend
# Inside its container it listens on all interfaces; the compose file requires basic auth.
ENV MODEL_DIR=/data PORT=9090 BIND=0.0.0.0:9090
VOLUME ["/data"]
EXPOSE 9090
CMD ["gunicorn", "-c", "python:backend.service.gunicorn_conf", "backend.service.wsgi:app"]
