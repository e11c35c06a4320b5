/*
 * hello.c - a tiny program for the importer tests
 */
#include <stdio.h>
#include <string.h>

static int counter;

static void greet(const char *name)
{
	if (name == NULL)
		name = "world";

	printf("hello, %s\n", name);
	counter++;
}

static void shout(const char *name)
{
	char buf[64];
	size_t i;

	strncpy(buf, name, sizeof(buf) - 1);
	buf[sizeof(buf) - 1] = '\0';
	for (i = 0; buf[i]; i++)
		if (buf[i] >= 'a' && buf[i] <= 'z')
			buf[i] -= 'a' - 'A';
	greet(buf);
}

int main(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		greet(argv[i]);
	if (argc < 2)
		greet(NULL);

	return counter > 0 ? 0 : 1;
}
