# The two commands of the README. Everything else is in scripts/.
.PHONY: run demo test

run:  ## start web + workers on the embedded default (SQLite, django-q2 ORM broker)
	scripts/run $(if $(DEMO),--demo)

demo:  ## the same with local demo servers and demo data (var/demo; nothing leaves 127.0.0.1)
	scripts/run --demo

test:  ## install what is missing, lint, run the suite on SQLite and on PostgreSQL
	scripts/test
