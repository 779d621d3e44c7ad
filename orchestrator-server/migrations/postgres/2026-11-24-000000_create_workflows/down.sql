DROP TABLE transitions;
DROP INDEX workflows_state_feature_id;
DROP TABLE workflows;
