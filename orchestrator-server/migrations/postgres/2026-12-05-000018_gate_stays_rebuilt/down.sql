-- Nothing to undo: a rebuilt stay is what the workflow would have kept.
SELECT 1;
