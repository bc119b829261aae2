"""kastore-service: store kastore files and serve their arrays over HTTP."""
