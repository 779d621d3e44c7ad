ALTER TABLE transitions
    ADD CONSTRAINT transitions_feature_id_fkey FOREIGN KEY (feature_id) REFERENCES workflows (feature_id);
