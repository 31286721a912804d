"""QualityDesk Ingest: website forms and chat starts into the customer database, minimised."""
