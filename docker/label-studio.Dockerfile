# Label Studio from pip, the version the backend is tested against.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements-label-studio.txt /tmp/
RUN pip install -r /tmp/requirements-label-studio.txt
ENV LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data
VOLUME ["/label-studio/data"]
EXPOSE 8080
CMD ["label-studio", "start", "--no-browser", "--host", "0.0.0.0", "--port", "8080"]
