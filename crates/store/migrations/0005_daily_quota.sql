-- Per app, per API: calls allowed per day (the platform's day, UTC+8). NULL: no quota.
ALTER TABLE apis ADD COLUMN daily_quota BIGINT;
