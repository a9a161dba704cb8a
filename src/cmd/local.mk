# src/cmd: targets of this part (included from Makefile.am)
