"""Gold: the star schema (customer and SCD2 product dimensions, sales fact) and BI views."""
