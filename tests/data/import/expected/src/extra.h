#ifndef EXTRA_H
#define EXTRA_H

#endif
