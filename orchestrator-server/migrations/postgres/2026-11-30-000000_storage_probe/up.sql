-- One row that health checks and start-up rewrite, to prove the database accepts writes.
CREATE TABLE storage_probe (
    id INTEGER NOT NULL PRIMARY KEY,
    at BIGINT  NOT NULL
);
