self.helperLoaded = 'yes';
