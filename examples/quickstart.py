from pathlib import Path

from pypet_rebuild import (
    Environment,
    HDF5StorageService,
    Parameter,
    Result,
    Trajectory,
    cartesian_product,
)


def simulate(traj: Trajectory) -> None:
    """Simple simulation that multiplies two parameters and records the result."""

    x = traj.parameters["x"].value
    y = traj.parameters["y"].value

    traj.add_result(Result(name=f"product.{x}_{y}", value=x * y))


def main() -> None:
    traj = Trajectory(name="multiplication")

    # Seed parameters; values will be overwritten during exploration
    traj.add_parameter(Parameter(name="x", value=0))
    traj.add_parameter(Parameter(name="y", value=0))

    storage = HDF5StorageService(file_path=Path("example.h5"))
    env = Environment(trajectory=traj, storage=storage)

    # Define the parameter space and run over all combinations
    space = {"x": [1, 2, 3], "y": [10, 20]}
    env.run_exploration(simulate, space=space)

    # After this, traj.results contains one result per combination, and
    # the data has been written to example.h5.


if __name__ == "__main__":
    main()
