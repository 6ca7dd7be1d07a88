DROP TABLE nosuch;
