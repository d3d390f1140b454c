"""The plumbing the stages share: configuration, the SparkSession, storage, Delta tables, run
summaries, model resolution, the scoring UDF, the view readers and the HTML report. Nothing here
is a stage, and nothing here imports one."""
