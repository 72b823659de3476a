# One image for every Python service of the deployment: Airflow components, the MLflow server,
# and the Spark master/worker (pyspark ships the Spark distribution; Java 17 runs it).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/*

ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PYTHONUNBUFFERED=1 \
    PIPELINE_HOME=/opt/purchase-intent \
    PYTHONPATH=/opt/purchase-intent \
    AIRFLOW_HOME=/opt/airflow

WORKDIR /opt/purchase-intent
COPY requirements.txt requirements-nodeps.txt ./
# torch from the CPU wheel index first, so nothing pulls a CUDA build; GPU images swap this line.
RUN pip install --no-cache-dir "$(grep -E '^torch==' requirements.txt)" --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-nodeps.txt

COPY conf ./conf
COPY dags ./dags
COPY tasks ./tasks
COPY spark_jobs ./spark_jobs
COPY expectations ./expectations

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/purchase-intent/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark

ENTRYPOINT ["/usr/bin/tini", "--"]
