# src/stages: targets of this part (included from Makefile.am)
