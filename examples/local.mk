# examples: targets of this part (see Makefile.am)
