DROP INDEX consultations_feature_id_created_at;
DROP TABLE consultations;
ALTER TABLE workflows DROP COLUMN hub_session_id;
