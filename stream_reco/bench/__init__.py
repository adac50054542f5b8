"""`stream-reco bench`: end-to-end figures through the real Kafka, worker and Redis."""
