-- Its rows were moved into call_segments by migration 7.
DROP TABLE api_calls;
