if __name__ == "__main__":
    from espnet_mtla.recipe.runner import entry_point

    entry_point()
