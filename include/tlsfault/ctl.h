/*
 * ctl.h — `tlsfault ctl`: the control API from a shell or a CI script.
 *
 * A small HTTP/1.1 client (plain sockets, one request per connection)
 * that turns commands into control API requests (control.h) and answers
 * into lines a person or a script reads.  Exit codes: 0 done, 1 the server
 * said no (or cannot be reached, or wait-fault timed out), 2 usage.
 */
#ifndef TLSFAULT_CTL_H
#define TLSFAULT_CTL_H

/* argv[0] is "ctl"; returns the exit code. */
int tf_ctl_main(int argc, char **argv);

#endif
