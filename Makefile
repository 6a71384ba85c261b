# The two commands of the README. Everything else is in scripts/.
.PHONY: run test

run:  ## start web + workers on the embedded default (SQLite, django-q2 ORM broker)
	scripts/run

test:  ## install what is missing, lint, run the suite on SQLite and on PostgreSQL
	scripts/test
