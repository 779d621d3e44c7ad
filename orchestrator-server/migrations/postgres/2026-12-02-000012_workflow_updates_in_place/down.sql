ALTER TABLE workflows RESET (fillfactor);
CREATE INDEX workflows_state_feature_id ON workflows (state, feature_id);
