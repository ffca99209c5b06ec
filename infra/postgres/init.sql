-- One server, one database per service (run once, on the first start of the postgres container).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
