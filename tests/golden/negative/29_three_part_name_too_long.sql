SELECT * FROM a.b.c.d;
