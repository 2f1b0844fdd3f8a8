-- A person found by their e-mail address, whatever its case (GET /v1/people?email=), as auth compares them.
CREATE INDEX users_by_email ON users (lower(email));
