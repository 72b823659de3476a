"""Independent reference implementations that tests compare the Spark jobs against."""
