# src/wire: targets of this part (included from Makefile.am)
