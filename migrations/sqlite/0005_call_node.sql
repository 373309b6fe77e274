-- Which gateway wrote the call ([database] node): at start a gateway marks only its own
-- interrupted calls truncated, not the live calls of the others sharing this database.
-- NULL: written before this column existed (treated as every node's, as before).
ALTER TABLE calls ADD COLUMN node TEXT;
