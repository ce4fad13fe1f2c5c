// The oasync command: a thin shell over the cli library.
#include "app.hpp"

int main(int argc, char** argv) {
  return oasync::cli::run(argc, argv);
}
