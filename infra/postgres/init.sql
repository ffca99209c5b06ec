-- One server, one database per service (run once, on the first start of the postgres container).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
-- the prediction log and feedback labels (SLUICE_PREDICTION_LOG_URL): model containers write, the worker reads
CREATE DATABASE predictions;
