"""stream-reco: real-time recommendations for online shops (Kafka -> Faust -> Redis)."""

__version__ = "0.1.0"
