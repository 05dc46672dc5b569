"""`mmembed bench`: end-to-end throughput through Triton, the raw encoder, and the transformers loop a user
would write without this project, in one run on one machine, printed as one table."""
