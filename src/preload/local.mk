# src/preload: targets of this part (included from Makefile.am)
