FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . \
    && mkdir -p /data && chmod 700 /data
ENV HOOKHUB_DATA_DIR=/data
EXPOSE 8000
# The sandbox drops attempts to unprivileged uids and makes namespaces: it runs as root in the
# container and needs CAP_SYS_ADMIN (see docker-compose.yml) for network/mount namespaces.
CMD ["hookhub", "serve", "--host", "0.0.0.0", "--port", "8000"]
