"""The Kinesis door: a Twilio Kinesis sink's stream read shard by shard (its transport in api.py), its records handed to the pipeline."""
