-- One server, three databases: Airflow metadata, the MLflow backend store, and the warehouse.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE warehouse;
