# placeholder until the package config lands
